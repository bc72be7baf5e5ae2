package bench

import (
	"io"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// BenchmarkLoopbackWriteFloor is what one delivery costs at the least on
// this machine: one write(2) of a 64-byte WebSocket frame to each of conns
// connected loopback sockets, in turn, from one locked thread, whose CPU
// time (user + system, RUSAGE_THREAD) is reported per write as
// cpu-ns/write. On loopback that system time includes the receiver's TCP
// input and the wake-up of its reader, as it does for the bridge: a
// channel delivery cannot cost the bridge less than this (BENCHMARKS.md,
// "sixth session").
//
//	go test -run '^$' -bench LoopbackWriteFloor -benchtime 200000x ./bench/
func BenchmarkLoopbackWriteFloor(b *testing.B) {
	for _, conns := range []int{1000, 8000} { // 8,000: 16,000 sockets, within 20,000 open files
		b.Run("conns="+strconv.Itoa(conns), func(b *testing.B) { writeFloor(b, conns) })
	}
}

func writeFloor(b *testing.B, conns int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	fds := make([]int, 0, conns)
	var keep []net.Conn
	defer func() {
		for _, c := range keep {
			_ = c.Close()
		}
	}()
	for range conns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Skipf("dial: %v (open-files limit?)", err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		keep = append(keep, c, s)
		go func() { _, _ = io.Copy(io.Discard, c) }() // the reader
		raw, err := s.(*net.TCPConn).SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		_ = raw.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
	}
	frame := make([]byte, 66) // a 64-byte text message: 2 bytes of header
	frame[0], frame[1] = 0x81, 64
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(1 /* RUSAGE_THREAD */, &r0)
	b.ResetTimer()
	for i := range b.N {
		for {
			_, err := syscall.Write(fds[i%len(fds)], frame)
			if err != syscall.EAGAIN && err != syscall.EINTR {
				if err != nil {
					b.Fatal(err)
				}
				break
			}
			time.Sleep(time.Millisecond) // a reader fell behind
		}
	}
	b.StopTimer()
	_ = syscall.Getrusage(1, &r1)
	cpu := time.Duration(r1.Utime.Nano()-r0.Utime.Nano()) + time.Duration(r1.Stime.Nano()-r0.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/write")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "writes/cpu-s")
}
