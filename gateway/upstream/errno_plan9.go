package upstream

// Plan 9 reports network errors as strings, not errno values: a refused or reset connection is
// then classified as any other upstream error.

func IsConnRefused(error) bool { return false }

func isConnReset(error) bool { return false }
