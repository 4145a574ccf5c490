"""The tiny synthesizer fixture's world (what tests, demos and benchmarks run on), and how it is rebuilt."""
