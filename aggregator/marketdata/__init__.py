"""Market data for the statistical margin model (issue 19): the strict CSV loader
(loader.py), the shipped history and its known bad rows (history.py), risk factors
(factors.py), EWMA covariance (covariance.py) and the backtest runner (backtest_run.py).

Nothing here does I/O except the loader and the backtest runner's output; every other
function is pure numpy on arrays it is given.
"""
