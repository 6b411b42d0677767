package kcfixture

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TokenResponse is a token endpoint's answer.
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope,omitempty"`
}

// StatusError is a non-2xx answer of Keycloak.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("keycloak answered %d: %s", e.Status, e.Body)
}

// Token returns an access token of clientID by the client-credentials grant.
func (k *Keycloak) Token(ctx context.Context, realm, clientID, secret string) (string, error) {
	tr, err := k.TokenRequest(ctx, realm, clientID, secret, url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		return "", err
	}
	return tr.AccessToken, nil
}

// PasswordToken returns an access token of user by the password grant through clientID
// (secret "" for a public client such as ClientPortal).
func (k *Keycloak) PasswordToken(ctx context.Context, realm, clientID, secret, user, password string) (string, error) {
	tr, err := k.TokenRequest(ctx, realm, clientID, secret, url.Values{
		"grant_type": {"password"}, "username": {user}, "password": {password}, "scope": {"openid"},
	})
	if err != nil {
		return "", err
	}
	return tr.AccessToken, nil
}

// TokenRequest posts form to realm's token endpoint, authenticating clientID with secret by
// HTTP basic auth (or as a public client when secret is "").
func (k *Keycloak) TokenRequest(ctx context.Context, realm, clientID, secret string, form url.Values) (*TokenResponse, error) {
	if secret == "" {
		form.Set("client_id", clientID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		k.Issuer(realm)+"/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("building token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	var tr TokenResponse
	if err := k.do(req, &tr); err != nil {
		return nil, fmt.Errorf("requesting a %s token for %s in realm %s: %w", form.Get("grant_type"), clientID, realm, err)
	}
	return &tr, nil
}

// Admin calls the admin REST API: path is below /admin/realms (e.g. "/corp/users"). body, when
// not nil, is sent as JSON; out, when not nil, receives the JSON answer. It returns the
// Location header of the answer (set when something was created).
func (k *Keycloak) Admin(ctx context.Context, method, path string, body, out any) (string, error) {
	var rd io.Reader
	if body != nil {
		if raw, ok := body.([]byte); ok {
			rd = bytes.NewReader(raw)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				return "", fmt.Errorf("encoding admin request: %w", err)
			}
			rd = bytes.NewReader(b)
		}
	}
	tok, err := k.adminAccessToken(ctx)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, method, k.URL+"/admin/realms"+path, rd)
	if err != nil {
		return "", fmt.Errorf("building admin request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("calling admin API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if err := decodeAnswer(resp, out); err != nil {
		return "", fmt.Errorf("calling admin API %s %s: %w", method, path, err)
	}
	return resp.Header.Get("Location"), nil
}

// adminAccessToken returns a cached master-realm admin token, renewed shortly before it expires.
func (k *Keycloak) adminAccessToken(ctx context.Context) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.adminToken != "" && time.Now().Before(k.adminExp) {
		return k.adminToken, nil
	}
	tr, err := k.TokenRequest(ctx, "master", "admin-cli", "", url.Values{
		"grant_type": {"password"}, "username": {k.AdminUser}, "password": {k.AdminPassword},
	})
	if err != nil {
		return "", fmt.Errorf("logging in as Keycloak admin: %w", err)
	}
	k.adminToken = tr.AccessToken
	k.adminExp = time.Now().Add(time.Duration(tr.ExpiresIn)*time.Second - 10*time.Second)
	return k.adminToken, nil
}

// UserID returns the id of a realm's user (service accounts are "service-account-<client>").
func (k *Keycloak) UserID(ctx context.Context, realm, username string) (string, error) {
	var users []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	q := url.Values{"username": {username}, "exact": {"true"}}
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm+"/users?"+q.Encode(), nil, &users); err != nil {
		return "", err
	}
	for _, u := range users {
		if u.Username == username {
			return u.ID, nil
		}
	}
	return "", fmt.Errorf("finding user %q in realm %s: no such user", username, realm)
}

// LogoutUser ends every session of a user, so that introspection reports its tokens inactive.
func (k *Keycloak) LogoutUser(ctx context.Context, realm, username string) error {
	id, err := k.UserID(ctx, realm, username)
	if err != nil {
		return err
	}
	_, err = k.Admin(ctx, http.MethodPost, "/"+realm+"/users/"+id+"/logout", nil, nil)
	return err
}

// RevokeSessions ends every session of a realm.
func (k *Keycloak) RevokeSessions(ctx context.Context, realm string) error {
	_, err := k.Admin(ctx, http.MethodPost, "/"+realm+"/logout-all", nil, nil)
	return err
}

// RealmKey is one key of a realm as the admin API lists it.
type RealmKey struct {
	Kid              string `json:"kid"`
	Algorithm        string `json:"algorithm"`
	Type             string `json:"type"`
	Use              string `json:"use"`
	Status           string `json:"status"`
	ProviderID       string `json:"providerId"`
	ProviderPriority int64  `json:"providerPriority"`
}

// Keys lists a realm's keys.
func (k *Keycloak) Keys(ctx context.Context, realm string) ([]RealmKey, error) {
	var out struct {
		Keys []RealmKey `json:"keys"`
	}
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm+"/keys", nil, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// RotateKeys adds a new active RS256 key provider to realm with a higher priority than every
// existing key, so that Keycloak signs new tokens with the new key (the old key stays valid for
// tokens already issued). It returns the new key's kid.
func (k *Keycloak) RotateKeys(ctx context.Context, realm string) (string, error) {
	var rep struct {
		ID string `json:"id"`
	}
	if _, err := k.Admin(ctx, http.MethodGet, "/"+realm, nil, &rep); err != nil {
		return "", fmt.Errorf("rotating keys of %s: %w", realm, err)
	}
	keys, err := k.Keys(ctx, realm)
	if err != nil {
		return "", fmt.Errorf("rotating keys of %s: %w", realm, err)
	}
	priority := int64(100)
	for _, key := range keys {
		if key.ProviderPriority >= priority {
			priority = key.ProviderPriority + 10
		}
	}
	name := "rotated-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	component := map[string]any{
		"name":         name,
		"providerId":   "rsa-generated",
		"providerType": "org.keycloak.keys.KeyProvider",
		"parentId":     rep.ID,
		"config": map[string][]string{
			"priority":  {strconv.FormatInt(priority, 10)},
			"enabled":   {"true"},
			"active":    {"true"},
			"algorithm": {"RS256"},
			"keySize":   {"2048"},
		},
	}
	loc, err := k.Admin(ctx, http.MethodPost, "/"+realm+"/components", component, nil)
	if err != nil {
		return "", fmt.Errorf("rotating keys of %s: %w", realm, err)
	}
	componentID := loc[strings.LastIndex(loc, "/")+1:]
	keys, err = k.Keys(ctx, realm)
	if err != nil {
		return "", fmt.Errorf("rotating keys of %s: %w", realm, err)
	}
	for _, key := range keys {
		if key.ProviderID == componentID && key.Algorithm == "RS256" {
			return key.Kid, nil
		}
	}
	return "", fmt.Errorf("rotating keys of %s: the new key provider %s lists no RS256 key", realm, componentID)
}

// importMissingRealms creates, through the admin API, every realm of dir the server lacks.
func (k *Keycloak) importMissingRealms(ctx context.Context, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*-realm.json"))
	if err != nil {
		return fmt.Errorf("listing realm exports: %w", err)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("reading realm export: %w", err)
		}
		var head struct {
			Realm string `json:"realm"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return fmt.Errorf("reading realm export %s: %w", filepath.Base(f), err)
		}
		_, err = k.Admin(ctx, http.MethodGet, "/"+head.Realm, nil, nil)
		var se *StatusError
		switch {
		case err == nil:
			continue
		case errors.As(err, &se) && se.Status == http.StatusNotFound:
		default:
			return err
		}
		if _, err := k.Admin(ctx, http.MethodPost, "", raw, nil); err != nil {
			return fmt.Errorf("importing realm %s: %w", head.Realm, err)
		}
	}
	return nil
}

func (k *Keycloak) do(req *http.Request, out any) error {
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeAnswer(resp, out)
}

func decodeAnswer(resp *http.Response, out any) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return &StatusError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	if out == nil || len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding answer: %w", err)
	}
	return nil
}
