"""Traffic into the system: a synthetic generator and a replay tool for real CSV logs."""
