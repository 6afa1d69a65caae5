"""The pretraining loop and what it runs on: optimizer, schedules, step statistics,
collapse watch, stop signals, trackers, process set-up."""
