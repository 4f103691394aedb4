package load

import "testing"

// BenchmarkStage measures stage (Go side) for one bench customer.
func BenchmarkStage(b *testing.B) {
	snap := benchSnapshots()[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := stage(snap); err != nil {
			b.Fatal(err)
		}
	}
}
