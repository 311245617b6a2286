"""``fraudstream compare``: what a challenger would have done beside the serving model.

- :mod:`~stream_app.compare.scored` replays a history through each bundle (the backtest)
  and applies the alert policy -> :class:`~stream_app.compare.scored.ModelRun`;
- :mod:`~stream_app.compare.figures` computes every figure from the runs (numpy only)
  -> :class:`~stream_app.compare.figures.Comparison`, written as JSON;
- :mod:`~stream_app.compare.report` renders the Markdown report and its PNG plots
  (matplotlib).
"""
