"""Synthetic labelled streams after published drift benchmarks, vectorised with numpy.

- SEA (Street & Kim, 2001): three features in [0, 10]; label = f1 + f2 <= theta.
- Agrawal (Agrawal, Imielinski & Swami, 1993): nine loan-applicant attributes, ten labelling
  functions; functions 1-3 and 5 are implemented here (as numbered in the paper, 1-based).
- Rotating hyperplane (Hulten, Spencer & Domingos, 2001): label = w.x >= sum(w)/2, w rotating.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEA_THETAS = (8.0, 9.0, 7.0, 9.5)


def sea(rows: int, concept: int, rng: np.random.Generator, noise: float = 0.1) -> pd.DataFrame:
    """SEA concepts 0-3 (thresholds 8, 9, 7, 9.5); the third feature is irrelevant."""
    x = rng.uniform(0, 10, size=(rows, 3))
    y = (x[:, 0] + x[:, 1] <= SEA_THETAS[concept]).astype(int)
    flip = rng.random(rows) < noise
    y[flip] = 1 - y[flip]
    return pd.DataFrame({"f1": x[:, 0], "f2": x[:, 1], "f3": x[:, 2], "label": y})


def _between(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (x >= low) & (x <= high)


def agrawal_features(rows: int, rng: np.random.Generator, ages: tuple[float, float] = (20, 80),
                     salary_scale: float = 1.0) -> pd.DataFrame:
    """Agrawal's attributes; `ages` and `salary_scale` move the feature distribution (covariate shift)."""
    salary = rng.uniform(20_000, 150_000, rows) * salary_scale
    commission = np.where(salary >= 75_000, 0.0, rng.uniform(10_000, 75_000, rows))
    age = rng.uniform(*ages, rows)
    elevel = rng.integers(0, 5, rows)
    car = rng.integers(1, 21, rows)
    zipcode = rng.integers(0, 9, rows)
    hvalue = (9 - zipcode) * 100_000 * rng.uniform(0.5, 1.5, rows)
    hyears = rng.integers(1, 31, rows)
    loan = rng.uniform(0, 500_000, rows)
    return pd.DataFrame({
        "salary": salary, "commission": commission, "age": age, "elevel": elevel,
        "car": car, "zipcode": zipcode, "hvalue": hvalue, "hyears": hyears, "loan": loan,
    })


def agrawal_label(x: pd.DataFrame, function: int) -> np.ndarray:
    """Group A (1) or B (0) under Agrawal's classification function 1, 2, 3 or 5."""
    age, salary, elevel, loan = x["age"], x["salary"], x["elevel"], x["loan"]
    young, middle = age < 40, (age >= 40) & (age < 60)
    old = ~(young | middle)
    if function == 1:
        a = young | old
    elif function == 2:
        a = ((young & _between(salary, 50_000, 100_000)) | (middle & _between(salary, 75_000, 125_000))
             | (old & _between(salary, 25_000, 75_000)))
    elif function == 3:
        a = ((young & elevel.isin([0, 1])) | (middle & elevel.isin([1, 2, 3]))
             | (old & elevel.isin([2, 3, 4])))
    elif function == 5:
        a = ((young & np.where(_between(salary, 50_000, 100_000), _between(loan, 100_000, 300_000),
                               _between(loan, 200_000, 400_000)))
             | (middle & np.where(_between(salary, 75_000, 125_000), _between(loan, 200_000, 400_000),
                                  _between(loan, 300_000, 500_000)))
             | (old & np.where(_between(salary, 25_000, 75_000), _between(loan, 300_000, 500_000),
                               _between(loan, 100_000, 300_000))))
    else:
        raise ValueError(f"Agrawal function {function} is not implemented (use 1, 2, 3 or 5)")
    return np.asarray(a, dtype=int)


def agrawal(rows: int, function: int, rng: np.random.Generator, noise: float = 0.05,
            ages: tuple[float, float] = (20, 80), salary_scale: float = 1.0) -> pd.DataFrame:
    """An Agrawal batch with `noise` of the labels flipped."""
    x = agrawal_features(rows, rng, ages=ages, salary_scale=salary_scale)
    y = agrawal_label(x, function)
    flip = rng.random(rows) < noise
    y[flip] = 1 - y[flip]
    return x.assign(label=y)


def hyperplane(rows: int, weights: np.ndarray, rng: np.random.Generator,
               noise: float = 0.05) -> pd.DataFrame:
    """Points in [0, 1]^d labelled by the side of the hyperplane w.x = sum(w) / 2."""
    x = rng.random((rows, len(weights)))
    y = (x @ weights >= weights.sum() / 2).astype(int)
    flip = rng.random(rows) < noise
    y[flip] = 1 - y[flip]
    return pd.DataFrame(x, columns=[f"x{i}" for i in range(len(weights))]).assign(label=y)


def rotate(weights: np.ndarray, magnitude: float, rng: np.random.Generator) -> np.ndarray:
    """Move each weight by `magnitude` in a random direction (the incremental drift)."""
    return weights + magnitude * rng.choice([-1.0, 1.0], size=len(weights))
