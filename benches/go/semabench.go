// semabench: HashiCorp's Go client semaphore (api.Semaphore, Consul 1.8.7's source) in-process, the
// peer of our library rows in the `semaphore` part of lockbench (benches/lockbench/semaphore.rs).
// Built by scripts/go-semabench.sh with the Go peer's toolchain and GOPATH; run by the Rust bench,
// which counts its requests (a counting proxy in front of the agent) and Raft writes.
//
//	semabench -addr 127.0.0.1:8500 -mode cycle -n 100            # one duration (ms) per line
//	semabench -addr … -mode contend -n 8 -turns 8 -log FILE       # "<unix ns> 1|0" per enter/exit
package main

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8500", "the agent's HTTP address")
	mode := flag.String("mode", "cycle", "cycle | contend")
	prefix := flag.String("prefix", "bench/sem/go-lib", "the semaphore's prefix")
	limit := flag.Int("limit", 2, "slots")
	n := flag.Int("n", 100, "cycle: cycles; contend: goroutines")
	turns := flag.Int("turns", 8, "contend: acquisitions per goroutine")
	logPath := flag.String("log", "", "contend: the section log")
	hold := flag.Duration("hold", 5*time.Millisecond, "contend: how long each holder holds")
	flag.Parse()

	cfg := api.DefaultConfig()
	cfg.Address = *addr
	client, err := api.NewClient(cfg)
	if err != nil {
		die("client: %v", err)
	}
	switch *mode {
	case "cycle":
		for i := 0; i < *n; i++ {
			t0 := time.Now()
			oneTurn(client, *prefix, *limit, func() {})
			fmt.Printf("%.4f\n", float64(time.Since(t0).Nanoseconds())/1e6)
		}
	case "contend":
		contend(client, *prefix, *limit, *n, *turns, *logPath, *hold)
	default:
		die("unknown -mode %q (cycle, contend)", *mode)
	}
}

// oneTurn acquires a slot (a new Semaphore, as each acquisition of a fresh process would), runs
// section while holding it, and releases it.
func oneTurn(client *api.Client, prefix string, limit int, section func()) {
	sem, err := client.SemaphoreOpts(&api.SemaphoreOptions{Prefix: prefix, Limit: limit})
	if err != nil {
		die("semaphore: %v", err)
	}
	lost, err := sem.Acquire(nil)
	if err != nil || lost == nil {
		die("acquire: %v", err)
	}
	section()
	if err := sem.Release(); err != nil {
		die("release: %v", err)
	}
}

func contend(client *api.Client, prefix string, limit, n, turns int, logPath string, hold time.Duration) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		die("log: %v", err)
	}
	defer f.Close()
	var mu sync.Mutex
	event := func(enter int) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(f, "%d %d\n", time.Now().UnixNano(), enter)
	}
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for t := 0; t < turns; t++ {
				oneTurn(client, prefix, limit, func() {
					event(1)
					time.Sleep(hold)
					event(0)
				})
			}
		}()
	}
	wg.Wait()
}

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "semabench: "+format+"\n", args...)
	os.Exit(1)
}
