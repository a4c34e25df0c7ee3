package events

import (
	"bytes"
	"errors"
	"strconv"
	"time"
)

// The usage batch format, written by hand because a flush of a million
// keys is one of them per 256 KiB and nothing else reads it: lines of text,
//
//	keyledger-usage-v1 <base: Unix minutes>
//	=<org>
//	<key id>[ <minutes after the base, or before it if negative>]
//
// A header may come again (a rollup is many batches one after another);
// an org line holds until the next. Lines it cannot read are skipped.
const usageHeader = "keyledger-usage-v1 "

// encodeUses appends to buf as many of uses as fit in limit bytes (at
// least one), and returns the rest.
func encodeUses(buf []byte, uses []KeyUse, limit int) ([]byte, []KeyUse) {
	if len(uses) == 0 {
		return buf, nil
	}
	base := uses[0].At.Unix() / 60
	buf = append(buf, usageHeader...)
	buf = strconv.AppendInt(buf, base, 10)
	buf = append(buf, '\n')
	org := ""
	for i, u := range uses {
		need := len(u.ID) + 22
		if u.Org != org || i == 0 {
			need += len(u.Org) + 2
		}
		if i > 0 && len(buf)+need > limit {
			return buf, uses[i:]
		}
		if u.Org != org || i == 0 {
			org = u.Org
			buf = append(buf, '=')
			buf = append(buf, org...)
			buf = append(buf, '\n')
		}
		buf = append(buf, u.ID...)
		if d := u.At.Unix()/60 - base; d != 0 {
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, d, 10)
		}
		buf = append(buf, '\n')
	}
	return buf, nil
}

var errUsageHeader = errors.New("usage batch: no header")

// decodeUses calls fn with every use in data.
func decodeUses(data []byte, fn func(org, id string, at time.Time)) error {
	var base int64
	var org string
	seenHeader := false
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte(usageHeader)):
			b, err := strconv.ParseInt(string(line[len(usageHeader):]), 10, 64)
			if err != nil {
				return errUsageHeader
			}
			base, org, seenHeader = b, "", true
		case !seenHeader:
			return errUsageHeader
		case line[0] == '=':
			org = string(line[1:])
		case org != "":
			id, off, hasOff := bytes.Cut(line, []byte(" "))
			minute := base
			if hasOff {
				d, err := strconv.ParseInt(string(off), 10, 64)
				if err != nil {
					continue
				}
				minute += d
			}
			if len(id) > 0 {
				fn(org, string(id), time.Unix(minute*60, 0).UTC())
			}
		}
	}
	return nil
}
