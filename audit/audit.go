// Package audit writes the session audit trail: one structured JSON event per
// session lifecycle change (started, ended with its cause, reauthenticated),
// for auditors who ask who was signed out when and why. It never writes a
// token or cookie value: session ids and scopes are hashed, subjects
// optionally too. File is the append-only destination that logrotate can
// move away (Reopen).
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Log is an authz.Events sink for lifecycle events; decisions are ignored
// (they are counted by metrics and logged at debug level elsewhere).
type Log struct {
	h           slog.Handler
	hashSubject bool
	onError     func(error)
}

// Options configure the audit log.
type Options struct {
	// HashSubject writes Hash(subject) instead of the subject, for logs
	// that must not hold user identifiers.
	HashSubject bool
	// OnError is told of every event that could not be written (a full
	// disk, a closed pipe), so that operators can be alerted; default none.
	OnError func(error)
}

// New writes JSON lines to w, one Write per event: slog's handler
// serializes concurrent events, so lines never interleave.
func New(w io.Writer, o Options) *Log {
	return &Log{h: slog.NewJSONHandler(w, nil), hashSubject: o.HashSubject, onError: o.OnError}
}

// Decided implements authz.Events; decisions are not audit events.
func (l *Log) Decided(*authz.Decision, time.Duration) {}

// SessionStarted implements authz.Events; it records how the session was
// signed in to (method: token or oidc).
func (l *Log) SessionStarted(e authz.SessionEvent) { l.write(slog.LevelInfo, "session_started", e) }

var _ authz.SignInAuditor = (*Log)(nil)

// SignInRefused implements authz.SignInAuditor: a sign-in the gate refused
// although the provider completed it (S14: re-authentication was asked for
// and not performed), a security event.
func (l *Log) SignInRefused(e authz.SessionEvent) { l.write(slog.LevelWarn, "sign_in_refused", e) }

// SessionEnded implements authz.Events. Identity mismatches are security
// events and are written at warning level.
func (l *Log) SessionEnded(e authz.SessionEvent) {
	lvl := slog.LevelInfo
	if e.Cause == authz.CauseIdentityMismatch {
		lvl = slog.LevelWarn
	}
	l.write(lvl, "session_ended", e)
}

// SessionReauthenticated implements authz.Events.
func (l *Log) SessionReauthenticated(e authz.SessionEvent) {
	l.write(slog.LevelInfo, "session_reauthenticated", e)
}

func (l *Log) write(lvl slog.Level, event string, e authz.SessionEvent) {
	// The event time is the decision time from the engine's clock, in UTC
	// so that lines from replicas in any zone sort as text.
	r := slog.NewRecord(e.At.UTC(), lvl, "audit", 0)
	r.AddAttrs(
		slog.String("event", event),
		slog.String("policy", e.Policy),
		slog.String("subject", l.subject(e.Subject)),
		slog.String("session", Hash(e.SessionID)),
	)
	if e.Scope != (authz.Digest{}) {
		r.AddAttrs(slog.String("scope", Hash(string(e.Scope[:]))))
	}
	if e.Cause != authz.CauseNone {
		r.AddAttrs(slog.String("cause", e.Cause.String()))
	}
	if e.Presented != "" {
		r.AddAttrs(slog.String("presented_subject", l.subject(e.Presented)))
	}
	if event == "session_started" || event == "sign_in_refused" {
		r.AddAttrs(slog.String("method", e.Method.String()))
	}
	if e.Reason != authz.ReasonNone {
		r.AddAttrs(slog.String("reason", e.Reason.String()))
	}
	r.AddAttrs(slog.String("source", e.SourceAddr), slog.String("request_id", e.RequestID))
	// The decision stands either way (the store holds the session); a lost
	// event is the operator's to know about.
	if err := l.h.Handle(context.Background(), r); err != nil && l.onError != nil {
		l.onError(err)
	}
}

// EndRequested writes one request to end or list sessions from outside a
// request (back-channel logout, administration): who, what, how many ended.
// A sid is hashed like a session id.
func (l *Log) EndRequested(e authz.EndRequest) {
	r := slog.NewRecord(e.At.UTC(), slog.LevelInfo, "audit", 0)
	r.AddAttrs(
		slog.String("event", e.Kind),
		slog.String("operation", e.Operation),
		slog.String("who", e.Who),
		slog.Any("policies", e.Policies),
	)
	if e.Subject != "" {
		r.AddAttrs(slog.String("subject", l.subject(e.Subject)))
	}
	if e.SID != "" {
		r.AddAttrs(slog.String("sid", Hash(e.SID)))
	}
	if e.Session != "" {
		r.AddAttrs(slog.String("session", e.Session))
	}
	if e.All {
		r.AddAttrs(slog.Bool("all", true))
	}
	r.AddAttrs(slog.String("result", e.Result), slog.Int("ended", e.Ended), slog.String("source", e.Source))
	if err := l.h.Handle(context.Background(), r); err != nil && l.onError != nil {
		l.onError(err)
	}
}

func (l *Log) subject(s string) string {
	if l.hashSubject && s != "" {
		return Hash(s)
	}
	return s
}

// Hash is the hex SHA-256 prefix (128 bits) used for session ids, scopes
// and, when configured, subjects. "" stays "" so that absent values stay
// visible. An auditor who knows a subject finds its hash with
// `printf %s SUBJECT | sha256sum | cut -c1-32`.
func Hash(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// IsSubjectKey reports whether a log attribute key carries a subject: the
// convention every package follows is the key "subject" or a key ending in
// "_subject" ("session_subject", "token_subject"). HashSubjects relies on it.
func IsSubjectKey(key string) bool {
	return key == "subject" || strings.HasSuffix(key, "_subject")
}

// HashSubjects is a slog.HandlerOptions.ReplaceAttr that writes Hash(v) in
// place of every string attribute whose key IsSubjectKey, so that
// --audit-hash-subject keeps subjects out of operator log lines (the WARN
// of an identity mismatch, for one) as it keeps them out of audit events.
func HashSubjects(_ []string, a slog.Attr) slog.Attr {
	if IsSubjectKey(a.Key) && a.Value.Kind() == slog.KindString {
		a.Value = slog.StringValue(Hash(a.Value.String()))
	}
	return a
}
