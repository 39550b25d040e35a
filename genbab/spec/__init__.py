"""VNN-LIB properties: the value types and the VNN-LIB 1.0 reader."""

from genbab.spec.property import Case, Clause, Property
from genbab.spec.vnnlib import read_vnnlib

__all__ = ["Case", "Clause", "Property", "read_vnnlib"]
