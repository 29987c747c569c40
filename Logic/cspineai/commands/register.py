"""``cspineai register``: register an axial CT to a sagittal MRI and write the results into one folder, atomically.

Outputs (``--out DIR``; the folder appears complete or not at all):

- ``warped_ct.nii.gz``: the CT resampled (linear) onto the MRI grid through the registration;
- ``displacement_lps.nii.gz``: the displacement field on the MRI grid, 3-vector per voxel, **LPS** mm (ITK's frame), in
  the ITK/Slicer resampling convention: MRI point ``x`` -> CT point ``x + d(x)``;
- ``transform.h5``: the same field as an ITK ``DisplacementFieldTransform`` file, which Slicer loads as a grid transform
  (put the CT under it to overlay it on the MRI) and ``sitk.ReadTransform`` reads;
- ``quality.json``: method, folding (% of voxels with Jacobian determinant <= 0), SD of the log-Jacobian, seconds, the
  field's frame and convention. No input paths or header fields are copied (they may identify the patient).
"""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("register", help="register a CT to an MRI (FPRAN, B-spline baseline, or headers)")
    parser.add_argument("--ct", required=True, help="CT volume (NIfTI/NRRD/MHA file or DICOM series folder); moving")
    parser.add_argument("--mri", required=True, help="MRI volume (file or DICOM folder); fixed, the output grid")
    parser.add_argument("--out", required=True, help="output folder (must not exist unless --overwrite)")
    parser.add_argument("--method", choices=("fpran", "bspline", "identity"), default="fpran",
                        help="fpran (the shipped network, default), bspline (classical SimpleITK baseline, slower), "
                             "identity (the headers' alignment only)")
    parser.add_argument("--model", default=None,
                        help="registry id of the FPRAN model (default: the shipped fpran-registration)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    import SimpleITK as sitk

    from ..atomic import atomic_directory
    from ..errors import CSpineInputError
    from ..io import read_volume, write_volume
    from ..registration import check_pair, displacement_image, register

    out = Path(args.out)
    if out.exists() and not args.overwrite:  # refused before any work, so a user's results are never replaced
        raise CSpineInputError(out, "output folder already exists (use --overwrite to replace it)")
    ct, mri = read_volume(args.ct), read_volume(args.mri)
    check_pair(ct, mri)  # before loading a model: a pair from two regions is refused at once
    model = None
    if args.method == "fpran" and args.model:
        from ..models.registry import load_model

        model = load_model(args.model)[0]
    result = register(ct, mri, model=model, method=args.method)

    with atomic_directory(out, overwrite=args.overwrite) as tmp:
        write_volume(result.warped_ct, tmp / "warped_ct.nii.gz")
        field = displacement_image(result.displacement_lps, mri)
        sitk.WriteImage(sitk.Cast(field, sitk.sitkVectorFloat32), str(tmp / "displacement_lps.nii.gz"),
                        useCompression=True)
        sitk.WriteTransform(result.to_sitk_transform(), str(tmp / "transform.h5"))
        quality = {
            "method": result.method,
            "folding_percent": round(result.folding_percent, 6),
            "sd_log_jacobian": round(result.sd_log_jacobian, 6),
            "seconds": round(result.seconds, 3),
            "field": {"file": "displacement_lps.nii.gz", "frame": "LPS", "units": "mm",
                      "convention": "MRI point x maps to CT point x + d(x) (ITK/Slicer resampling transform)",
                      "grid": "MRI", "shape_kji": list(mri.shape)},
            "transform": "transform.h5",
            "warped_ct": "warped_ct.nii.gz",
        }
        (tmp / "quality.json").write_text(json.dumps(quality, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out} ({result.method}: {result.seconds:.2f} s, folding {result.folding_percent:.3f}%, "
          f"SD log-Jacobian {result.sd_log_jacobian:.3f})")
    return 0
