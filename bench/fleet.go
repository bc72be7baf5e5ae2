package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/wsbridge/wsbridge/bench/loadgen"
)

// fleet is the set of generators of one run: the local one, or worker
// processes whose reports are merged.
type fleet interface {
	// collect returns the merged totals and moves the latencies recorded
	// since the last call into lat and hs.
	collect(lat, hs *loadgen.Snapshot) loadgen.Totals
	quiesce()
	drop()
	stop(wait time.Duration) error
	// seqStats is loadgen.Gen.SeqStats over the whole fleet: deliveries of
	// message seq summed, the latest delivery's unix ns (one clock).
	seqStats(seq uint32) (n, last int64)
}

// localFleet runs the generator in this process.
type localFleet struct{ g *loadgen.Gen }

func (f localFleet) collect(lat, hs *loadgen.Snapshot) loadgen.Totals {
	f.g.DrainLatency(lat, hs)
	return f.g.Totals()
}
func (f localFleet) quiesce()                      { f.g.Quiesce() }
func (f localFleet) drop()                         { f.g.Drop() }
func (f localFleet) stop(wait time.Duration) error { return f.g.Stop(wait) }
func (f localFleet) seqStats(seq uint32) (n, last int64) {
	return f.g.SeqStats(seq)
}

// WorkerArg is the hidden first argument that makes wsbench a worker
// process: `wsbench -wsbench-worker '<loadgen.Config as JSON>'`.
const WorkerArg = "-wsbench-worker"

// report is one line a worker writes to stdout, every reportEvery.
type report struct {
	T    loadgen.Totals `json:"t"`
	Lat  [][2]uint64    `json:"lat,omitempty"`
	LMax int64          `json:"lmax,omitempty"`
	HS   [][2]uint64    `json:"hs,omitempty"`
	HMax int64          `json:"hmax,omitempty"`
	Done bool           `json:"done,omitempty"`
	Err  string         `json:"err,omitempty"`
	// Seq (Config.Track > 0): [seq, deliveries, unix ns of the last] for
	// each sequence number whose count changed since the last report;
	// the counts are totals, not increments.
	Seq [][3]int64 `json:"seq,omitempty"`
}

const reportEvery = 250 * time.Millisecond

// Worker runs a worker process: it starts a generator from the JSON config,
// reports on stdout, and obeys "quiesce", "drop" and "stop" lines on stdin
// (EOF on stdin stops it too, so a dead parent leaves no orphan).
func Worker(cfgJSON string, stdin io.Reader, stdout io.Writer) error {
	var cfg loadgen.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		return fmt.Errorf("bench: worker config: %w", err)
	}
	g, err := loadgen.Start(cfg)
	if err != nil {
		return err
	}
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds)
	}()
	enc := json.NewEncoder(stdout)
	var lat, hs loadgen.Snapshot
	var seqSent []int64 // per sequence number, the count last reported
	if cfg.Track > 0 {
		seqSent = make([]int64, cfg.Track)
	}
	send := func(done bool, err error) error {
		var r report
		// Sequence numbers before the totals: a delivery is counted in
		// Recv before it is tracked, so the totals of a report include
		// every delivery its Seq does.
		for i := range seqSent {
			if n, last := g.SeqStats(uint32(i)); n != seqSent[i] {
				r.Seq = append(r.Seq, [3]int64{int64(i), n, last})
				seqSent[i] = n
			}
		}
		lat.Reset()
		hs.Reset()
		g.DrainLatency(&lat, &hs)
		r.T, r.Lat, r.LMax, r.HS, r.HMax, r.Done = g.Totals(), lat.Sparse(), lat.Max, hs.Sparse(), hs.Max, done
		if err != nil {
			r.Err = err.Error()
		}
		return enc.Encode(&r)
	}
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := send(false, nil); err != nil {
				_ = g.Stop(time.Second)
				return err
			}
		case c, ok := <-cmds:
			switch {
			case !ok || c == "stop" || len(c) > 5 && c[:5] == "stop ":
				wait := 3 * time.Second
				if ok && len(c) > 5 {
					if d, err := time.ParseDuration(c[5:]); err == nil {
						wait = d
					}
				}
				err := g.Stop(wait)
				return send(true, err)
			case c == "quiesce":
				g.Quiesce()
			case c == "drop":
				g.Drop()
			}
		}
	}
}

// procFleet is a set of worker processes.
type procFleet struct {
	mu    sync.Mutex
	procs []*workerProc
}

type workerProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	last  loadgen.Totals
	lat   loadgen.Snapshot
	hs    loadgen.Snapshot
	done  chan struct{}
	err   error
	// Per sequence number (Config.Track), from the reports' Seq.
	seqN, seqLast []int64
}

// startWorkers re-executes exe once per config.
func startWorkers(exe string, cfgs []loadgen.Config) (*procFleet, error) {
	f := &procFleet{}
	for _, cfg := range cfgs {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		w := &workerProc{cmd: exec.Command(exe, WorkerArg, string(b)), done: make(chan struct{})}
		if cfg.Track > 0 {
			w.seqN, w.seqLast = make([]int64, cfg.Track), make([]int64, cfg.Track)
		}
		w.cmd.Stderr = os.Stderr
		w.stdin, err = w.cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := w.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := w.cmd.Start(); err != nil {
			_ = f.stop(time.Second)
			return nil, fmt.Errorf("bench: starting worker: %w", err)
		}
		f.procs = append(f.procs, w)
		go f.read(w, out)
	}
	return f, nil
}

func (f *procFleet) read(w *workerProc, out io.Reader) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var r report
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		f.mu.Lock()
		w.last = r.T
		w.lat.AddSparse(r.Lat, r.LMax)
		w.hs.AddSparse(r.HS, r.HMax)
		for _, s := range r.Seq {
			if s[0] >= 0 && s[0] < int64(len(w.seqN)) {
				w.seqN[s[0]], w.seqLast[s[0]] = s[1], s[2]
			}
		}
		if r.Err != "" {
			w.err = errors.New(r.Err)
		}
		f.mu.Unlock()
	}
	if err := w.cmd.Wait(); err != nil {
		f.mu.Lock()
		if w.err == nil {
			w.err = fmt.Errorf("bench: worker: %w", err)
		}
		f.mu.Unlock()
	}
}

func (f *procFleet) collect(lat, hs *loadgen.Snapshot) loadgen.Totals {
	f.mu.Lock()
	defer f.mu.Unlock()
	var t loadgen.Totals
	for _, w := range f.procs {
		t.Add(w.last)
		lat.Add(&w.lat)
		hs.Add(&w.hs)
		w.lat.Reset()
		w.hs.Reset()
	}
	return t
}

func (f *procFleet) seqStats(seq uint32) (n, last int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.procs {
		if len(w.seqN) == 0 {
			continue
		}
		i := uint64(seq) % uint64(len(w.seqN))
		n += w.seqN[i]
		last = max(last, w.seqLast[i])
	}
	return n, last
}

func (f *procFleet) tell(cmd string) {
	for _, w := range f.procs {
		_, _ = io.WriteString(w.stdin, cmd+"\n")
	}
}

func (f *procFleet) quiesce() { f.tell("quiesce") }
func (f *procFleet) drop()    { f.tell("drop") }

func (f *procFleet) stop(wait time.Duration) error {
	f.tell("stop " + wait.String())
	var errs []error
	for _, w := range f.procs {
		_ = w.stdin.Close()
		select {
		case <-w.done:
		case <-time.After(wait + 10*time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		f.mu.Lock()
		if w.err != nil {
			errs = append(errs, w.err)
		}
		f.mu.Unlock()
	}
	return errors.Join(errs...)
}
