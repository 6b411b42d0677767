// Package upstream is how the gateway talks to upstreams: the request path's lean HTTP/1.1
// connection pool (Pool), the http.Transport for what the pool does not send (https targets,
// bodies of unknown length, upgrades), one transport per route timeout (Clients), smooth
// weighted round-robin over a route's targets (Balancer), and failover to the next target when
// one cannot be connected to (Route.Send). It knows nothing of policies, consumers or
// identities: the pipeline builds a Route per route at load time and calls Send.
package upstream
