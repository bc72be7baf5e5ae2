package engine

// RaceEnabled reports whether the race detector is on, for the black-box
// tests' allocation assertions.
const RaceEnabled = raceEnabled

// Wakes returns how many times the server has woken its event loops with
// EventLoop.Execute.
func (s *Server) Wakes() (n uint64) {
	s.loopsMu.Lock()
	loops := s.loops
	s.loopsMu.Unlock()
	for _, l := range loops {
		l.mu.Lock()
		n += l.wakes
		l.mu.Unlock()
	}
	return n
}
