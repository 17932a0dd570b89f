"""Iris species from flower measurements (scikit-learn's iris data, logistic regression)."""

from pydantic import BaseModel, Field

from runtime import Endpoint, Limits, OnnxModel

SPECIES = ("setosa", "versicolor", "virginica")


class Flower(BaseModel):
    """One flower, measured in centimetres."""

    sepal_length: float = Field(gt=0, le=50)
    sepal_width: float = Field(gt=0, le=50)
    petal_length: float = Field(gt=0, le=50)
    petal_width: float = Field(gt=0, le=50)


class Species(BaseModel):
    label: str = Field(description="The most likely species.")
    probabilities: dict[str, float] = Field(description="Probability of each species.")


endpoint = Endpoint(Flower, Species, model="iris.onnx", limits=Limits(max_batch_size=256))


@endpoint.predict
def predict(flowers: list[Flower], model: OnnxModel) -> list[Species]:
    rows = [[f.sepal_length, f.sepal_width, f.petal_length, f.petal_width] for f in flowers]
    out = model.run({"input": rows})
    return [
        Species(label=SPECIES[label], probabilities=dict(zip(SPECIES, probs, strict=True)))
        for label, probs in zip(out["label"].tolist(), out["probabilities"].tolist(), strict=True)
    ]
