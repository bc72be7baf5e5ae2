package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/bridge/journal"
	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/engine/adminapi"
	"github.com/wsbridge/wsbridge/engine/cluster"
	"github.com/wsbridge/wsbridge/sysctl"
)

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	if format == "console" {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	// Sampling keeps a flood of per-connection messages from costing more
	// than the connections do.
	cfg.Sampling = &zap.SamplingConfig{Initial: 100, Thereafter: 100}
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

func run(o *options) error {
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}

	stuck := o.backendStuckConns
	if stuck < 0 {
		stuck = stuckConns(raiseNoFile(log), o.backendMaxConns, o.engine.MaxConns)
	} else {
		raiseNoFile(log)
	}
	checkHost(log, o.engine.MaxConns, o.backendMaxConns+stuck)

	if o.demo {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo backend: %w", err)
		}
		defer ln.Close()
		go func() { _ = bridge.ServeDemo(ln) }()
		o.backend = "http://" + ln.Addr().String() + "/"
		log.Info("demo backend: accepts every ClientId and echoes every message", zap.String("backend", o.backend))
	}

	if o.signer != nil {
		log.Info("signing backend calls", zap.String("keyid", o.signer.KeyID()))
	}
	metrics := engine.NewMetrics()
	backend, err := bridge.New(bridge.Config{
		Backend:    o.backend,
		MaxConns:   o.backendMaxConns,
		StuckAfter: o.backendStuckAfter,
		MaxStuck:   stuck,
		Pipeline:   o.backendPipeline,
		Adapt:      o.backendAdapt,
		Timeout:    o.backendTimeout,
		Observe:    metrics.ObserveBackend,
		Logger:     log.Named("bridge"),
		Signer:     o.signer,
		BatchURL:   o.batchURL,
		BatchMax:   o.batchMax,
		BatchDelay: o.batchDelay,
	})
	if err != nil {
		return err
	}
	if o.batchURL != "" {
		registerBatchMetrics(metrics.Registry, backend)
		log.Info("batching messages", zap.String("batch_url", o.batchURL), zap.Int("max", o.batchMax), zap.Duration("delay", o.batchDelay))
	}
	defer backend.Close()
	metrics.WatchBackend(backend)

	var bus *cluster.Bus
	if o.cluster != "" {
		bus, err = cluster.New(cluster.Config{
			URLs: strings.Join(splitList(o.cluster), ","), NodeID: o.nodeID,
			// The holder answers a release once its DELETE is answered.
			ReleaseTimeout: o.backendTimeout + 5*time.Second,
			Log:            log, Registry: metrics.Registry,
		})
		if err != nil {
			return err
		}
		defer bus.Close() // after the drain: every Drop is sent
		o.engine.Bus = bus
		o.engine.OnChannel = bus.OnChannel
		log.Info("cluster", zap.String("node_id", o.nodeID), zap.String("nats", o.cluster), zap.Bool("up", bus.Up()))
	}
	srv, err := engine.New(o.engine, backend, metrics, log.Named("engine"))
	if err != nil {
		return err
	}
	if bus != nil {
		bus.SetServer(srv)
	}
	if o.journalDir != "" {
		// Before the listener: the orphans' ClientIds are registered as
		// awaiting their DELETE before any client can reconnect.
		j, rec, err := journal.Open(o.journalDir, journal.Options{
			Sync: o.journalSync, SyncEvery: o.journalEvery,
			OnWritten: srv.JournalWritten, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("-journal: %w", err)
		}
		defer func() {
			if err := j.Close(); err != nil {
				log.Error("journal close", zap.Error(err))
			}
		}()
		log.Info("journal", zap.String("dir", j.Dir()), zap.String("sync", o.journalSync.String()),
			zap.Int("orphans", len(rec.Orphans)), zap.Int("damaged_files", len(rec.Damage)))
		srv.UseJournal(j, rec.Orphans)
	}
	if err := srv.Start(); err != nil {
		return err
	}

	if o.trimMemory {
		stopTrim := make(chan struct{})
		defer close(stopTrim)
		go newTrimmer().run(stopTrim, log.Named("trim"), metrics.MemoryTrimmed)
	}

	adminLn, err := net.Listen("tcp", o.admin)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	acfg := adminapi.Config{Token: o.adminToken, Pprof: o.pprof}
	if bus != nil {
		acfg.Remote, acfg.NodeID = bus, o.nodeID
	}
	admin := adminapi.New(srv, acfg)
	go func() {
		if err := admin.Serve(adminLn); err != nil {
			log.Error("admin listener stopped", zap.Error(err))
		}
	}()
	log.Info("wsbridge listening",
		zap.String("listen", srv.Addr()), zap.String("admin", adminLn.Addr().String()),
		zap.String("backend", backend.Base()), zap.Int("loops", loops(o.engine.Loops)),
		zap.Bool("reuseport", o.engine.ReusePort), zap.Bool("deflate", o.engine.Deflate))

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	var runErr error
	select {
	case s := <-sig:
		// The first signal drains: -drain-timeout bounds the wait for the
		// clients; the backend still gets every queued POST and DELETE
		// after it. A second signal stops at once, losing the DELETEs not
		// yet answered: the exit status is then 1.
		log.Info("signal: draining", zap.String("signal", s.String()), zap.Duration("drain_timeout", o.engine.DrainTimeout))
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case s := <-sig:
				log.Warn("second signal: stopping at once", zap.String("signal", s.String()),
					zap.Int64("deletes_owed", srv.DeletesOwed()), zap.Int64("backend_pending", backend.Pending()))
				cancel()
			case <-ctx.Done():
			}
		}()
		err := srv.Shutdown(ctx)
		cancel()
		switch {
		case err == nil:
			log.Info("drained")
		case errors.Is(err, engine.ErrDrainTimeout):
			log.Warn("drained past -drain-timeout: the last clients were closed without waiting; every POST and DELETE was sent")
		default:
			log.Error("stopped before the drain finished", zap.Error(err),
				zap.Int64("deletes_lost", srv.DeletesOwed()), zap.Int64("backend_calls_lost", backend.Pending()))
			runErr = err
		}
	case <-srv.Done():
		runErr = srv.Err()
		if runErr == nil {
			runErr = errors.New("engine stopped unexpectedly")
		}
		log.Error("engine stopped", zap.Error(runErr))
	}
	actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = admin.ShutdownWithContext(actx)
	acancel()

	if o.memProfile != "" {
		f, err := os.Create(o.memProfile)
		if err != nil {
			return fmt.Errorf("-memprofile: %w", err)
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return fmt.Errorf("-memprofile: %w", err)
		}
		_ = f.Close()
	}
	log.Info("stopped")
	return runErr
}

func loops(n int) int {
	if n > 0 {
		return n
	}
	return runtime.NumCPU()
}

// raiseNoFile raises the soft open-files limit to the hard one and
// returns it (0 if unknown).
func raiseNoFile(log *zap.Logger) uint64 {
	soft, hard, err := sysctl.RaiseNoFile()
	if err != nil {
		log.Warn("could not raise the open-files limit", zap.Error(err))
		return 0
	}
	log.Info("open-files limit", zap.Uint64("soft", soft), zap.Uint64("hard", hard))
	return soft
}

// stuckConns is the default -backend-stuck-conns: 4096, or less when the
// open-files limit is tight. The engine reserves a descriptor for each
// (fdBudget), so they come out of the clients' share: with -max-conns set
// the stuck calls get what the clients cannot use, without it an eighth of
// what the backend's own sockets and the engine's reserve leave.
func stuckConns(nofile uint64, backendConns, maxConns int) int {
	const most = 4096
	if nofile == 0 || nofile > 1<<31 {
		return most
	}
	left := int(nofile) - 128 - backendConns
	if maxConns > 0 {
		return min(most, max(0, left-maxConns))
	}
	return min(most, max(0, left/8))
}

// checkHost warns, once at start, when the host cannot carry -max-conns
// connections and backendConns backend sockets (see sysctl/tune for the
// fixes).
func checkHost(log *zap.Logger, maxConns, backendConns int) {
	conns := maxConns
	if conns > 0 {
		conns += backendConns
	}
	for _, w := range sysctl.Check(conns) {
		log.Warn("host tuning: "+w, zap.String("fix", "sysctl/tune check --connections N"))
	}
}

// registerBatchMetrics adds the batch series (with -backend-batch-url).
func registerBatchMetrics(r *prometheus.Registry, c *bridge.Client) {
	stat := func(f func(bridge.BatchStats) int64) func() float64 {
		return func() float64 {
			_, s := c.Batching()
			return float64(f(s))
		}
	}
	r.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_backend_batches_total",
			Help: "Batch requests sent to -backend-batch-url (each is also one POST in wsbridge_backend_requests_total, with its outcome).",
		}, stat(func(s bridge.BatchStats) int64 { return s.Batches })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_backend_batch_messages_total",
			Help: "Messages carried by batch requests; divided by wsbridge_backend_batches_total, the mean batch size.",
		}, stat(func(s bridge.BatchStats) int64 { return s.Messages })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "wsbridge_backend_batch_messages_failed_total",
			Help: "Batched messages that failed as a failed POST does (their batch failed, the answer had no reply for them, or a text reply was not UTF-8).",
		}, stat(func(s bridge.BatchStats) int64 { return s.Failed })),
	)
}
