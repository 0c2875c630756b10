"""The engine: intake, scheduling, running, recovering and sweeping jobs."""
