"""Benchmark suites (`automl bench`): automl beside strong baselines on fixed splits.

suites.py reads a suite's YAML; splits.py gives each cell its committed data; systems/
holds one small module per compared system behind one interface; runner.py runs every
(dataset, budget, seed, system) cell under the same wall budget, resumably, into the
store; scoring.py holds the AMLB-style scaled scores and average ranks (pure
functions); report.py writes the CSV, markdown and plots. Importing this package is cheap.
"""
