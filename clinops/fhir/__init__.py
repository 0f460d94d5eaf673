"""FHIR R4B export of a patient's record (fhir.resources models).

`resources.py` maps rows to FHIR resources (plain functions, no queries), `everything.py` reads
one patient's rows and assembles the Bundle, `views.py` serves `GET /fhir/Patient/{id}/$everything`.
"""
