// A FerretDB 1.24.2 server for tickpipe's tests: a MongoDB wire-protocol server on the SQLite backend.
//
// `go install github.com/FerretDB/FerretDB/cmd/ferretdb@v1.24.2` builds but panics at start (its version.txt
// is missing from module builds), so the tests build this wrapper instead (pipeline/dev/ferretdb.py, once,
// into a cache outside the clone). Test-only: the product never runs or imports it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "host:port to listen on")
	dir := flag.String("data", "./data", "SQLite data directory")
	level := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-test: bad -log-level:", err)
		os.Exit(2)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-test:", err)
		os.Exit(1)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dir + "/",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb-test:", err)
		os.Exit(1)
	}
	// SIGTERM/SIGINT end Run: FerretDB closes its listener and the SQLite databases.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f.Run(ctx)
}
