// Package domain holds the Key aggregate, the commands that decide its
// events, the rules those commands enforce, the key format and the one error
// type. It imports nothing of NATS, HTTP or JSON transport.
package domain
