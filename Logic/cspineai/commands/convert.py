"""``cspineai convert``: read a volume (file or DICOM series folder), check it, and write it as NIfTI/NRRD/MHA.

Only geometry and voxels are written, so a converted DICOM series carries no patient identifier.
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="check a volume and write it as NIfTI/NRRD/MHA (no DICOM identifiers)"
    )
    parser.add_argument("input", help="NIfTI/NRRD/MHA file or DICOM series folder")
    parser.add_argument("output", help="output file (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--series-uid", help="series to read from a folder holding several")
    parser.add_argument("--plane", choices=["axial", "sagittal", "coronal"], help="refuse the input unless acquired so")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import CSpineInputError
    from ..geometry import require_plane
    from ..io import read_volume, write_volume

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise CSpineInputError(output, "output file already exists (use --overwrite to replace it)")
    volume = read_volume(args.input, series_uid=args.series_uid)
    if args.plane:
        require_plane(volume, args.plane)
    write_volume(volume, output)
    print(f"wrote {output} ({volume.plane}, shape {volume.shape})")
    return 0
