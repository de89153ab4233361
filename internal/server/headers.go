package server

import "net/http"

// securityHeaders sets, on every answer of the server (API, UI, and the
// mux's own redirects and 404s), what a browser should enforce for it:
// HTTPS only from now on (the server serves nothing else), never inside
// a frame, no guessing a Content-Type, and no URL of this server in the
// Referer sent to another site. The UI adds its Content-Security-Policy.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=31536000")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}
