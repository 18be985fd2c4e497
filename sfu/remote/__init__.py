"""The room service across a process or node boundary (issue 13): the api's values as JSON
(:mod:`sfu.remote.wire`) in length-prefixed frames (:mod:`sfu.remote.frames`). The design is
docs/design/scale-out-plan.md §3.2."""
