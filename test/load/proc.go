package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc CPU times: 100 on every Linux
// architecture Go supports (the kernel fixes it for the user ABI).
const clockTicks = 100

// procCPU returns the user+system CPU ticks consumed so far by pid ("self"
// for this process), from fields 14 and 15 of /proc/PID/stat.
func procCPU(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields that follow start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%s/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: %d fields", pid, len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return utime + stime, nil
}

// machineBusy returns the ticks all CPUs spent busy (not idle or waiting for
// I/O), from the first line of /proc/stat.
func machineBusy() (int64, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, fmt.Errorf("/proc/stat: empty")
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var busy int64
	// user nice system idle iowait irq softirq steal (guest time is already
	// counted in user).
	for i, s := range fields[1:min(len(fields), 9)] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, nil
}

// sample is the CPU counters read before and after a run.
type sample struct{ server, client, machine int64 }

func takeSample(pid int) (sample, error) {
	var s sample
	var err error
	if s.server, err = procCPU(strconv.Itoa(pid)); err != nil {
		return s, err
	}
	if s.client, err = procCPU("self"); err != nil {
		return s, err
	}
	s.machine, err = machineBusy()
	return s, err
}
