"""Publish a compressed LiteWhisper model to the Hugging Face Hub, with a model card built from its reports.

    liteasr upload --model models/lite-whisper-base-default --repo-id my-org/lite-whisper-base --dry-run
    liteasr upload --model models/lite-whisper-base-default --repo-id my-org/lite-whisper-base
    liteasr upload --batch configs/publish/example.yaml
    liteasr upload --model models/lite-whisper-base-default --repo-id my-org/lite-whisper-base \
        --benchmark results/benchmark-base.json    # liteasr benchmark --models base MODEL: the card's speeds
    liteasr upload --model models/lite-whisper-base-default --repo-id my-org/lite-whisper-base \
        --onnx models/lite-whisper-base-default-onnx    # liteasr export-onnx's output, published under onnx/

The folder is staged (beside it, as <model>-hub, unless --staging-dir), checked (it must load with
trust_remote_code in a clean process without liteasr_hf), then uploaded as one commit of the files that changed.
The code files staged are this liteasr_hf's own; a folder whose code differs is refused unless --trust-remote-code.
Only a folder that staging wrote is ever replaced as --staging-dir.
The token is huggingface_hub's: HF_TOKEN, or the one `hf auth login` saved. It is never printed.
"""

from __future__ import annotations

import argparse
import sys

from ..hub import PublishError, PublishResult, publish, publish_batch
from ..hub.model_card import DEFAULT_LICENSE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr upload", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="folder written by liteasr compress")
    p.add_argument("--repo-id", help="Hub repo to publish to, as namespace/name")
    p.add_argument("--batch", metavar="FILE", help="YAML file listing variants to publish (see configs/publish/)")
    results = p.add_mutually_exclusive_group()
    results.add_argument("--evaluation", nargs="+", metavar="PATH",
                         help="evaluation summaries (*.summary.json) or folders of them, for this model and its base "
                              "model (default: the <model>-evaluation folder if it exists)")
    results.add_argument("--no-evaluation", action="store_true", help="publish without results (the card says so)")
    p.add_argument("--benchmark", metavar="FILE",
                   help="report of liteasr benchmark holding this model and its base model: the card's speed "
                        "comparison (default: none, and the card says so)")
    p.add_argument("--onnx", metavar="DIR",
                   help="ONNX export of this model (liteasr export-onnx --output), published under onnx/ for "
                        "transformers.js and onnx-asr (default: the model folder's own onnx/, if any)")
    p.add_argument("--base-model", help="Hub id of the Whisper checkpoint that was compressed "
                                        "(default: read from compression_report.json)")
    p.add_argument("--license", default=DEFAULT_LICENSE, help="license id for the card (default: %(default)s)")
    p.add_argument("--dataset", dest="datasets", action="append", default=[], metavar="ID",
                   help="Hub dataset id to list in the card's metadata (repeatable)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (created from main if missing; default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request against main instead of committing")
    p.add_argument("--commit-message", help="commit title (default: 'Upload <name> (LiteWhisper)')")
    p.add_argument("--staging-dir", help="where to stage the files (default: <model>-hub beside the model)")
    p.add_argument("--skip-check", action="store_true",
                   help="do not load the staged folder in a clean process before uploading")
    p.add_argument("--dry-run", action="store_true", help="stage, check and list what would be uploaded; no network")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="stage, run (in the check) and publish the folder's own code files where they differ from "
                        "this liteasr_hf's (default: such a folder is refused; read its code first)")
    p.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    args = p.parse_args(argv)
    if args.batch:
        per_variant = {"--model": args.model, "--repo-id": args.repo_id, "--evaluation": args.evaluation,
                       "--no-evaluation": args.no_evaluation, "--benchmark": args.benchmark,
                       "--onnx": args.onnx, "--base-model": args.base_model,
                       "--dataset": args.datasets, "--private": args.private, "--revision": args.revision,
                       "--create-pr": args.create_pr, "--commit-message": args.commit_message,
                       "--staging-dir": args.staging_dir, "--license": args.license != DEFAULT_LICENSE}
        given = [flag for flag, value in per_variant.items() if value]
        if given:
            p.error(f"with --batch, set {', '.join(given)} per variant in the batch file (or under its defaults)")
    if not args.batch and not (args.model and args.repo_id):
        p.error("give --model and --repo-id, or --batch FILE")
    return args


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def report(result: PublishResult, dry_run: bool) -> None:
    """Print what was staged and, after an upload, what changed on the Hub."""
    staged = result.staged
    print(f"Staged {staged.path} for {staged.repo_id}:")
    width = max(len(name) for name in staged.files)
    for name, size in staged.files.items():
        print(f"  {name:<{width}}  {_size(size):>9}")
    print(f"  {len(staged.files)} files, {_size(staged.total_bytes)}")
    data = staged.card.data
    wer = [f"WER {r.metric_value} on {r.dataset_name} ({r.dataset_split})" for r in data.eval_results or []]
    print(f"Card: base_model {data.base_model}, license {data.license}, "
          f"{'; '.join(wer) if wer else 'no evaluation results (stated as missing)'}")
    for path in staged.evaluation:
        print(f"  from {path}")
    if staged.benchmark is not None:
        print(f"  speed comparison from {staged.benchmark}")
    if staged.check:
        print(f"Check: loads with trust_remote_code without liteasr_hf as {staged.check['model']} "
              f"(+ {staged.check['auto_model']}, {staged.check['pipeline']})")
    for note in staged.notes:
        print(f"Note: {note}")
    upload = result.upload
    if dry_run or upload is None:
        print("Dry run: nothing was uploaded.")
    elif not upload.changed and not upload.deleted:
        print(f"{upload.repo_id}@{upload.revision} already holds these files (commit {upload.commit_oid}): "
              "nothing uploaded.")
    else:
        print(f"Published {upload.repo_id}@{upload.revision}: commit {upload.commit_oid}, {len(upload.changed)} "
              f"file(s) uploaded, {len(upload.deleted)} deleted, {len(upload.unchanged)} unchanged.")
        print(f"  {upload.pr_url or upload.repo_url}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.batch:
            publish_batch(args.batch, endpoint=args.endpoint, dry_run=args.dry_run, check=not args.skip_check,
                          on_result=lambda result: report(result, args.dry_run),
                          trust_remote_code=args.trust_remote_code)
        else:
            result = publish(
                args.model, args.repo_id, evaluation=[] if args.no_evaluation else args.evaluation,
                staging_dir=args.staging_dir, base_model=args.base_model, license=args.license,
                datasets=args.datasets, benchmark=args.benchmark, onnx=args.onnx,
                private=args.private, revision=args.revision,
                create_pr=args.create_pr, commit_message=args.commit_message, endpoint=args.endpoint,
                dry_run=args.dry_run, check=not args.skip_check, trust_remote_code=args.trust_remote_code,
            )
            report(result, args.dry_run)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the source model folder is unchanged; run the command again to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
