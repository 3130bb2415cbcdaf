"""Running a run: the frozen run inputs, the session, the scheduler, live progress and the run loop."""
