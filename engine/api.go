package engine

// The plain methods the admin API (engine/adminapi) needs beside Push,
// Kick, Lookup and Ready.

// MaxMessage is the -max-message limit: the largest push the admin API
// accepts.
func (s *Server) MaxMessage() int64 { return s.cfg.MaxMessage }

// Metrics returns the series the server counts on: the admin API serves
// them on /metrics and counts the pushes it refuses itself.
func (s *Server) Metrics() *Metrics { return s.metrics }

// PushTooBig counts a push refused with 413: larger than -max-message.
func (m *Metrics) PushTooBig() { m.pushes[pushTooBig].Inc() }

// PushBadRequest counts a push refused with 400: a text push that is not
// valid UTF-8.
func (m *Metrics) PushBadRequest() { m.pushes[pushBadRequest].Inc() }
