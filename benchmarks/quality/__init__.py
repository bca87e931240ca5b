"""`lehnz eval`: offline recommendation quality on public datasets, through the server's own code.

Every protocol trains with `workers.train_process.train_models` (the worker's training function,
model search included) and asks `app.recommend.answer.answer` (the function behind
`POST /v1/recommend`) for every answer it scores (serving.py); the end-to-end protocol does the
same over HTTP against a fresh `lehnz serve` (end_to_end.py). Only what belongs to a protocol
lives here: loading and splitting the data, the metrics, the baselines, and the report.
"""
