package engine

// Internals for the black-box tests.

// TickCount returns the current timer tick.
func (s *Server) TickCount() int64 { return s.tick() }
