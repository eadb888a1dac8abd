// jsbatch: JetStream asynchronous-publish load generator in batch windows, the
// NATS side of raftlog's batch comparison (bench/batch-compare.sh).
//
// Each of -clients goroutines publishes -batch messages with PublishAsync (no
// wait between them), then waits until every one of them has its PubAck (=
// stored on a quorum of the R3 stream) before the next window: the same unit
// of work as one `POST /v1/messages/batch` of -batch messages at w=majority.
// A window with any failed publish counts as an error. Latency is per window.
//
// Built like ../shared/bench/nats/jspub against Debian's nats.go (GOPATH mode).
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

func main() {
	urls := flag.String("urls", "nats://127.0.0.1:24221", "comma separated")
	conns := flag.Int("conns", 1, "NATS connections")
	clients := flag.Int("clients", 1, "concurrent publishers")
	batch := flag.Int("batch", 1000, "messages per window")
	dur := flag.Duration("duration", 10*time.Second, "run time")
	size := flag.Int("size", 100, "message bytes")
	flag.Parse()

	jss := make([]nats.JetStreamContext, *conns)
	ncs := make([]*nats.Conn, *conns)
	// Room for every window of the clients sharing a connection: the limit
	// must never be what stops a window (it would stall, then fail).
	perConn := (*clients + *conns - 1) / *conns
	for i := range jss {
		nc, err := nats.Connect(*urls)
		die(err)
		js, err := nc.JetStream(nats.PublishAsyncMaxPending(*batch * perConn * 2))
		die(err)
		ncs[i], jss[i] = nc, js
	}
	js := jss[0]
	_ = js.DeleteStream("BENCH")
	var err error
	for try := 0; try < 100; try++ { // meta leader may not be elected yet
		_, err = js.AddStream(&nats.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"}, Storage: nats.FileStorage, Replicas: 3})
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	die(err)
	msg := []byte(strings.Repeat("v", *size))
	for try := 0; try < 100; try++ { // stream leader may not be elected yet
		if _, err = js.Publish("bench.warm", msg); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	die(err)

	lats := make([][]time.Duration, *clients)
	errs := make([]int, *clients)
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < *clients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			j := jss[g%len(jss)]
			subj := fmt.Sprintf("bench.%d", g)
			futs := make([]nats.PubAckFuture, 0, *batch)
			for time.Now().Before(deadline) {
				a := time.Now()
				futs = futs[:0]
				failed := false
				for i := 0; i < *batch; i++ {
					f, err := j.PublishAsync(subj, msg)
					if err != nil {
						failed = true
						break
					}
					futs = append(futs, f)
				}
				for _, f := range futs {
					select {
					case <-f.Ok():
					case <-f.Err():
						failed = true
					case <-time.After(30 * time.Second):
						failed = true
					}
				}
				if failed {
					errs[g]++
					continue
				}
				lats[g] = append(lats[g], time.Since(a))
			}
		}(g)
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	ne := 0
	for g, l := range lats {
		all = append(all, l...)
		ne += errs[g]
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	n := len(all)
	if n == 0 {
		fmt.Println("no successful windows; errors:", ne)
		os.Exit(1)
	}
	p := func(q float64) float64 { return float64(all[int(q*float64(n-1))].Microseconds()) / 1000 }
	fmt.Printf("jsbatch conns=%d clients=%d batch=%d windows=%d errors=%d secs=%.2f windows_per_s=%.1f msgs_per_s=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
		*conns, *clients, *batch, n, ne, el.Seconds(), float64(n)/el.Seconds(), float64(n**batch)/el.Seconds(), p(.5), p(.99), float64(all[n-1].Microseconds())/1000)
	for _, nc := range ncs {
		nc.Close()
	}
}

func die(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
