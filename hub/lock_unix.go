//go:build unix

package hub

// Cross-process lock on CKPT_DIR/<file>.lock, so two processes sharing a checkpoint
// directory never append to the same .part file at once. flock locks vanish when the
// process dies, so a crash never leaves a stale lock behind.

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// lockFile takes an exclusive lock on path (creating it), waiting for another holder but
// giving up when ctx ends. The file itself stays: removing it would race with a process
// that has just opened it.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	// Polling with LOCK_NB, not a blocking flock, so cancellation is honoured promptly.
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
