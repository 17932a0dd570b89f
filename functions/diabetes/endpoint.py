"""Disease progression one year after baseline (scikit-learn's diabetes data, ridge regression).

Features are in the data set's original units (``load_diabetes(scaled=False)``): age in years,
sex as 1 or 2, body-mass index, mean blood pressure, and six blood serum measurements.
"""

from pydantic import BaseModel, Field

from runtime import Endpoint, Limits, OnnxModel

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


class Patient(BaseModel):
    age: float = Field(ge=0, le=120)
    sex: int = Field(ge=1, le=2)
    bmi: float = Field(gt=0, le=100)
    bp: float = Field(gt=0, le=300)
    s1: float
    s2: float
    s3: float
    s4: float
    s5: float
    s6: float


class Progression(BaseModel):
    progression: float = Field(description="Quantitative measure of progression after one year.")


endpoint = Endpoint(Patient, Progression, model="diabetes.onnx", limits=Limits(max_batch_size=256))


@endpoint.predict
def predict(patients: list[Patient], model: OnnxModel) -> list[Progression]:
    rows = [[getattr(p, f) for f in FEATURES] for p in patients]
    out = model.run({"input": rows})
    return [Progression(progression=row[0]) for row in out["variable"].tolist()]
