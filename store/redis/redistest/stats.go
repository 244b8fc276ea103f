package redistest

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// CommandCalls returns how many times Redis ran each command (lower-case
// name → calls) since it started or since the last CONFIG RESETSTAT,
// from its own INFO commandstats: what reached the server, whatever the
// client believes it sent.
func CommandCalls(ctx context.Context, c redis.UniversalClient) (map[string]int64, error) {
	info, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return ParseCommandStats(info), nil
}

// ParseCommandStats parses the calls of each command out of the text of
// INFO commandstats ("cmdstat_get:calls=12,usec=…").
func ParseCommandStats(info string) map[string]int64 {
	calls := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					calls[strings.TrimPrefix(name, "cmdstat_")] = n
				}
			}
		}
	}
	return calls
}
