"""One-shot commands on clips: ``depthcraft <step> CLIP -o OUT`` (OUT a video file or a folder/).

The clip is probed first (every bad input is one line naming the file), then the step runs over
its frames through the clip engine (``depthcraft.tasks.clips``): depth from the provider,
temporally stable, one frame at a time, the clip's audio carried into every video output. The
progress bar counts frames.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from depthcraft.tasks.lib.errors import ParameterError


def run_clip_oneshot(args, spec, params_from_args) -> int:
    """``params_from_args`` is flows.oneshot's (passed in: this module is imported by it)."""
    from rich.console import Console

    from depthcraft.tasks.clips import output_target, run_clip
    from depthcraft.tasks.lib.clip import probe_clip

    from . import progress, recovery

    from depthcraft.tasks.lib.clip import clip_words

    if spec.kind != "estimate" and getattr(spec, "clip_frame", None) is None:  # before any talk of its output
        from depthcraft.tasks.catalog import clip_kinds

        raise ParameterError(f"{Path(args.image).name} is {clip_words(args.image)}, a clip; {spec.kind} takes "
                             f"photos", parameter="uses",
                             hint=f"clips go to {', '.join(clip_kinds())} (-o OUT.mp4 or -o DIR/); extract one "
                                  f"frame to run {spec.kind} on it")
    if args.depth:
        raise ParameterError("--depth is for photos; a clip's depth is estimated frame by frame", parameter="--depth")
    # the output's suffix says video or folder here, not a per-image format
    params = params_from_args(dataclasses.replace(spec, params_for_output=None), args)
    from depthcraft.tasks.clips import target_conflict

    try:
        output_target(args.output)
    except OSError as e:  # (a name too long for the file system)
        raise ParameterError(f"{args.output}: {e.strerror or e}", parameter="-o") from None
    except ParameterError as e:  # say why a video is asked for: the input is a clip (a photo suffix surprises)
        words = f": {Path(args.image).name} is {clip_words(args.image)}, a clip, whose output is"
        raise ParameterError(e.reason.replace(": a clip's output is", words, 1), parameter="-o", hint=e.hint) from None
    bad = target_conflict(spec.kind, output_target(args.output), params, set(params.model_fields_set))
    if bad:  # an explicit --format the output cannot hold (tasks/clips.py)
        flag = "--" + bad[0].replace("_", "-") + " " if getattr(args, f"param_{bad[0]}", None) is not None else f"--set {bad[0]}="
        raise ParameterError(f"{Path(args.output).name or args.output}: {flag}{bad[1]}", parameter="-o",
                             hint="a folder of frames is -o DIR/" if bad[0] != "layout" else None)
    from depthcraft.tasks.clips import output_paths, planned_outputs
    from depthcraft.tasks.lib.outputs import can_write, refuse_input

    # every file it will write, before any work: stereo renames its output (s.mp4 -> s_SBS_LR.mp4),
    # export writes one file per format beside it (the clip may be out-png16.mkv)
    for dest in output_paths(spec.kind, Path(args.output), planned_outputs(spec.kind, params), params,
                             output_target(args.output)).values():
        refuse_input(dest, {"the input": args.image})
        can_write(dest)
    from depthcraft.tasks.lib.images import MIN_SIDE

    info = probe_clip(args.image, max_pixels=args.max_pixels, downscale=args.downscale, min_side=MIN_SIDE)
    console = Console(stderr=True, soft_wrap=True)
    recovery.clean_stale_oneshot_tmp()  # what a killed one-shot left (a partial video)
    with tempfile.TemporaryDirectory(prefix=recovery.oneshot_tmp_prefix()) as tmp:
        reporter = progress.RichReporter(total=1, description=f"{spec.kind} {Path(args.image).name}",
                                         transient=True) if console.is_terminal else None
        from depthcraft.tasks.clips import estimate_workers

        from .outlock import oneshot_writing

        # (the photo one-shots' write turn: two one-shots writing one -o write one set of files)
        kw = dict(provider=args.provider, mode=args.mode, info=info, workers=estimate_workers(),
                  writing=lambda: oneshot_writing(Path(args.output)))
        if reporter:
            with reporter, progress.reporting(reporter):
                written = run_clip(spec.kind, args.image, args.output, params, tmp,
                                   progress=lambda d, t: reporter.update("frames", d, t), **kw)
        else:
            written = run_clip(spec.kind, args.image, args.output, params, tmp, **kw)
    for w in written:
        console.print(f"wrote {w}{'/' if w.is_dir() else ''} ({info.frames} frames, "
                      f"{info.rate.numerator}/{info.rate.denominator} fps)")
    return 0


def single_frame_note(e: ParameterError, image) -> ParameterError:
    """``e`` about ``-o`` for a photo command whose input has a clip's suffix (a video, a GIF or
    WebP) but a single frame: the same line, saying that the input is taken as a photo (so a
    video output is a photo's, e.g. parallax's, and a depth map is an image file)."""
    from depthcraft.tasks.lib.clip import MOVIE_SUFFIXES

    p = Path(image)
    if e.parameter != "-o" or p.suffix.lower() not in (MOVIE_SUFFIXES | {".gif", ".webp"}):
        return e
    return ParameterError(f"{e.reason} ({p.name} has a single frame, so it is taken as a photo)",
                          parameter="-o", hint=e.hint)
