"""Example SageMaker-style handler: a scikit-learn classifier of iris flowers.

Input: JSON (a list of rows of 4 measurements), CSV, or NPY -- SageMaker's
default input_fn handles all three.  Output: class names and probabilities.
"""
import json
import os
import pickle

CLASSES = ["setosa", "versicolor", "virginica"]


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.pickle"), "rb") as fh:
        return pickle.load(fh)


def predict_fn(data, model):
    proba = model.predict_proba(data)
    return [
        {"class": CLASSES[int(row.argmax())], "probabilities": [round(float(p), 4) for p in row]}
        for row in proba
    ]


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
