"""Energy and emissions accounting: per-job aggregation of sources, plausibility, folding, emissions,
efficiency, attribution."""
