"""`lehnz eval`: offline recommendation quality on public datasets, through the server's own code.

Training goes through app.ml.train.train_org_models and scoring through the serving strategy
functions (a RankContext per query); only what belongs to a protocol lives here: loading and
splitting the data, excluding training items, the metrics, the baselines, and the report.
"""
