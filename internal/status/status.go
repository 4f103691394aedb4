// Package status is the syncer's one vocabulary of outcomes: the status of
// a run (sync_runs.status, the "status" of `syncer run --format json`, the
// status label of msads_sync_runs_total) and of one customer's sync
// (customer_syncs.status, msads_customer_syncs_total). Every package that
// writes, reads or counts a status uses these constants; no other code spells
// them.
package status

// Status is the outcome of a run or of one customer's sync.
type Status string

// Run statuses. A run is Running from its start until it records its end;
// Abandoned marks a run whose process stopped without recording an end (the
// next run of the same credential marks it); Locked is the outcome of a run
// that found the credential's run lease held and did nothing (it is counted,
// never recorded in sync_runs).
const (
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Partial   Status = "partial"
	Failed    Status = "failed"
	Canceled  Status = "canceled"
	Abandoned Status = "abandoned"
	Locked    Status = "locked"
)

// Skipped is the outcome of a customer that a stopped run never started
// (customer statuses are Succeeded, Failed and Skipped; only the first two
// are recorded in customer_syncs).
const Skipped Status = "skipped"

// Run outcomes: the statuses a run ends with (Running and Abandoned are
// states of a sync_runs row, not outcomes of a process).
var RunOutcomes = []Status{Succeeded, Partial, Failed, Canceled, Locked}

// CustomerOutcomes are the statuses of a customer's sync that are counted
// and recorded (Skipped is in the run's result only).
var CustomerOutcomes = []Status{Succeeded, Failed}

// Final reports whether s is a status a run may record as its end in
// sync_runs (FinishRun).
func (s Status) Final() bool {
	switch s {
	case Succeeded, Partial, Failed, Canceled:
		return true
	}
	return false
}

// String returns the status as it is stored and printed.
func (s Status) String() string { return string(s) }
