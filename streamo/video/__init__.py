"""Video access: duration probing, exact per-second frame sampling and the frame cache."""
