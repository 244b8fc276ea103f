// Package audit writes the session audit trail: one structured JSON event per
// session lifecycle change (started, ended with its cause, reauthenticated),
// for auditors who ask who was signed out when and why. It never writes a
// token or cookie value: session ids are hashed, subjects optionally too.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"time"

	"github.com/sessiongate/sessiongate/authz"
)

// Log is an authz.Events sink for lifecycle events; decisions are ignored
// (they are counted by metrics and logged at debug level elsewhere).
type Log struct {
	log         *slog.Logger
	hashSubject bool
}

// Options configure the audit log.
type Options struct {
	// HashSubject writes sha256(subject) instead of the subject, for logs
	// that must not hold user identifiers.
	HashSubject bool
}

// New writes JSON lines to w.
func New(w io.Writer, o Options) *Log {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey && a.Value.Kind() == slog.KindTime {
				// Event time is the decision time from the engine's clock.
				return slog.Attr{}
			}
			return a
		},
	})
	return &Log{log: slog.New(h), hashSubject: o.HashSubject}
}

// Decided implements authz.Events; decisions are not audit events.
func (l *Log) Decided(*authz.Decision, time.Duration) {}

// SessionStarted implements authz.Events.
func (l *Log) SessionStarted(e authz.SessionEvent) { l.write(slog.LevelInfo, "session_started", e) }

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
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("time", e.At.UTC().Format(time.RFC3339Nano)),
		slog.String("event", event),
		slog.String("policy", e.Policy),
		slog.String("subject", l.subject(e.Subject)),
		slog.String("session", Hash(e.SessionID)),
	)
	if e.Cause != authz.CauseNone {
		attrs = append(attrs, slog.String("cause", e.Cause.String()))
	}
	if e.Presented != "" {
		attrs = append(attrs, slog.String("presented_subject", l.subject(e.Presented)))
	}
	attrs = append(attrs, slog.String("source", e.SourceAddr), slog.String("request_id", e.RequestID))
	l.log.LogAttrs(context.Background(), lvl, "audit", attrs...)
}

func (l *Log) subject(s string) string {
	if l.hashSubject && s != "" {
		return Hash(s)
	}
	return s
}

// Hash is the hex SHA-256 prefix (128 bits) used for session ids and, when
// configured, subjects. "" stays "" so that absent values stay visible.
func Hash(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
