"""``cspineai info``: print a volume's geometry (shape, spacing, plane, orientation) without patient data."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a volume file or DICOM series folder")
    parser.add_argument("path", help="NIfTI/NRRD/MHA file or DICOM series folder")
    parser.add_argument("--series-uid", help="series to read from a folder holding several")
    parser.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..geometry import obliquity_degrees
    from ..io import read_volume

    volume = read_volume(args.path, series_uid=args.series_uid, allow_constant=True)
    print(f"shape (k, j, i): {volume.shape}  dtype: {volume.array.dtype}")
    print(f"spacing (i, j, k) mm: {tuple(round(s, 4) for s in volume.spacing)}")
    print(f"plane: {volume.plane} (obliquity {obliquity_degrees(volume.direction):.1f} deg)")
    print("IJK->RAS:\n" + np.array2string(volume.ijk_to_ras, precision=4, suppress_small=True))
    print(f"intensity range: {volume.array.min()} .. {volume.array.max()}")
    return 0
