"""Energy and emissions accounting: per-job aggregation, folding, emissions, efficiency, attribution."""
