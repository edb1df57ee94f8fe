"""The benchmark pipeline: demos -> training -> evaluation -> language probe -> report, as resumable
stages driven by a profile (policies/profiles/*.toml). ``vlabench pipeline`` (command.py) runs it."""
