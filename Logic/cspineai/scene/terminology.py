"""Standard (SNOMED CT) terminology for the label values of :data:`cspineai.series.LABELS`.

Segments carry DICOM-style codes (category, type, anatomic region) so that a DICOM SEG export and other tools know
what a segment is without parsing its name. Sources of the codes (none is invented):

- Category "Anatomical Structure" SCT 123037004 and "Vertebral body" SCT 3572006: Slicer's TotalSegmentator extension,
  ``TotalSegmentator/Resources/totalsegmentator_snomed_mapping.csv`` (rows ``spinal_cord``, ``vertebrae_body``).
- "Spinal cord" SCT 2748008 and "Cerebrospinal fluid" SCT 65216001: DICOM PS3.16 CID 7153 "CNS Segmentation Type".
- C2..T1 vertebrae: DICOM PS3.16 CID 7603 "Vertebra" (also in the TotalSegmentator mapping).
- C2/C3..C7/T1 discs: DICOM PS3.16 CID 7604 "Intervertebral Disc".

The project's vertebral-body labels are typed "Vertebral body" with the level's vertebra as anatomic region. No code for
"posterior elements of a vertebra" is in those lists, so those segments are typed as the level's vertebra (CID 7603),
the closest standard concept; their names still say "posterior elements".
"""

from __future__ import annotations

import dataclasses

from ..series import BODY_VALUES, CORD, CSF, DISC_VALUES, POSTERIOR_VALUES

CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
REGION_CONTEXT = "Anatomic codes - DICOM master list"


@dataclasses.dataclass(frozen=True)
class Code:
    """One coded concept: coding scheme designator, code value, code meaning."""

    value: str
    meaning: str
    scheme: str = "SCT"


ANATOMICAL_STRUCTURE = Code("123037004", "Anatomical Structure")
SPINAL_CORD = Code("2748008", "Spinal cord")
CEREBROSPINAL_FLUID = Code("65216001", "Cerebrospinal fluid")
VERTEBRAL_BODY = Code("3572006", "Vertebral body")
VERTEBRA = {  # DICOM CID 7603
    "C2": Code("39976000", "C2 vertebra"),
    "C3": Code("113205007", "C3 vertebra"),
    "C4": Code("5329002", "C4 vertebra"),
    "C5": Code("36978003", "C5 vertebra"),
    "C6": Code("36054005", "C6 vertebra"),
    "C7": Code("87391001", "C7 vertebra"),
    "T1": Code("64864005", "T1 vertebra"),
}
DISC = {  # DICOM CID 7604
    "C2-C3": Code("1078209008", "C2/C3 disc"),
    "C3-C4": Code("58820006", "C3/C4 disc"),
    "C4-C5": Code("49400002", "C4/C5 disc"),
    "C5-C6": Code("73959003", "C5/C6 disc"),
    "C6-C7": Code("75095006", "C6/C7 disc"),
    "C7-T1": Code("37414007", "C7/T1 disc"),
}


@dataclasses.dataclass(frozen=True)
class Terminology:
    """Category, type and (optional) anatomic region of one segment."""

    category: Code
    type: Code
    region: Code | None = None

    def serialize(self) -> str:
        """The entry as Slicer stores it in a segment's ``TerminologyEntry`` tag."""
        import slicer

        entry = slicer.vtkSlicerTerminologyEntry()
        entry.SetTerminologyContextName(CATEGORY_CONTEXT)
        for code, target in ((self.category, entry.GetCategoryObject()), (self.type, entry.GetTypeObject())):
            _fill(target, code)
        entry.SetRegionContextName(REGION_CONTEXT)
        if self.region is not None:
            _fill(entry.GetRegionObject(), self.region)
        return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(entry)

    @classmethod
    def parse(cls, serialized: str) -> Terminology | None:
        """Read back a serialized entry (None when it is empty or malformed)."""
        import slicer

        entry = slicer.vtkSlicerTerminologyEntry()
        if not serialized or not slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(
            serialized, entry
        ):
            return None
        region = _code(entry.GetRegionObject())
        return cls(_code(entry.GetCategoryObject()), _code(entry.GetTypeObject()), region)


def _fill(target, code: Code) -> None:
    target.SetCodingSchemeDesignator(code.scheme)
    target.SetCodeValue(code.value)
    target.SetCodeMeaning(code.meaning)


def _code(source) -> Code | None:
    if not source.GetCodeValue():
        return None
    return Code(source.GetCodeValue(), source.GetCodeMeaning(), source.GetCodingSchemeDesignator())


def _terminology_by_value() -> dict[int, Terminology]:
    table = {
        CORD: Terminology(ANATOMICAL_STRUCTURE, SPINAL_CORD),
        CSF: Terminology(ANATOMICAL_STRUCTURE, CEREBROSPINAL_FLUID),
    }
    for level, value in BODY_VALUES.items():
        table[value] = Terminology(ANATOMICAL_STRUCTURE, VERTEBRAL_BODY, VERTEBRA[level])
    for level, value in DISC_VALUES.items():
        table[value] = Terminology(ANATOMICAL_STRUCTURE, DISC[level])
    for level, value in POSTERIOR_VALUES.items():
        table[value] = Terminology(ANATOMICAL_STRUCTURE, VERTEBRA[level])
    return table


#: Terminology of every label value of :data:`cspineai.series.LABELS`.
TERMINOLOGY_BY_VALUE = _terminology_by_value()


def terminology_for_label(value: int) -> Terminology | None:
    """The standard terminology of a label value (None for values outside :data:`cspineai.series.LABELS`)."""
    return TERMINOLOGY_BY_VALUE.get(int(value))
