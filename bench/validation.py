"""CPU per submit validation: a raw body through `strict_json.loads` and `request_models.parse_submission`,
as `POST /sdapi/v1/{txt2img,img2img}` does before the store is touched; in-process, no HTTP, no store.

    .venv/bin/python bench/validation.py [--compare DIR] [--calls 2000] [--rounds 5]

Each body is parsed `--calls` times per round; a round's figure is CPU time (process_time) per call,
and the table shows the best round (the least disturbed by other processes) and the median. With
`--compare DIR` (another checkout, e.g. /work/main) the same bodies go through that checkout's code
too, in its own interpreter, rounds alternating, so both columns see the same machine load.

Bodies: the submit of `bench/core.py`; a large realistic txt2img (35 fields as webuiapi sends them, a
LoRA prompt, override_settings, ControlNet and ADetailer units, a webhook and metadata); an img2img
with a 192 KB init image and a ControlNet unit with a 64 KB image (long strings that the URL and
base64 checks read).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def bodies() -> dict[str, tuple[str, bytes]]:
    """name → (kind, raw body)."""
    sys.path.insert(0, str(ROOT))
    from bench import core  # noqa: PLC0415 - only the parent process reads the bodies

    image = base64.b64encode(os.urandom(192 * 1024 * 3 // 4)).decode()
    control_image = base64.b64encode(os.urandom(64 * 1024 * 3 // 4)).decode()
    large = {
        "prompt": "masterpiece, best quality, a lighthouse at dusk on a rocky shore, volumetric light, "
                  "<lora:add_detail:0.8> <lora:pp-enchanted-whimsy:0.6>, (dramatic clouds:1.2)",
        "negative_prompt": "lowres, bad anatomy, bad hands, text, error, missing fingers, cropped, worst quality",
        "styles": [], "seed": 1234567, "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0,
        "seed_resize_from_w": 0, "sampler_name": "DPM++ 2M", "scheduler": "karras", "batch_size": 2, "n_iter": 2,
        "steps": 28, "cfg_scale": 6.5, "width": 768, "height": 512, "restore_faces": False, "tiling": False,
        "do_not_save_samples": False, "do_not_save_grid": False, "eta": 1.0, "denoising_strength": 0.45,
        "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
        "override_settings": {"CLIP_stop_at_last_layers": 2, "sd_vae": "vae-ft-mse-840000-ema-pruned.safetensors",
                              "eta_noise_seed_delta": 31337},
        "override_settings_restore_afterwards": True,
        "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 12,
        "hr_resize_x": 0, "hr_resize_y": 0,
        "script_args": [], "send_images": True, "save_images": False,
        "alwayson_scripts": {
            "ControlNet": {"args": [{"enabled": True, "module": "canny", "model": "control_v11p_sd15_canny",
                                     "weight": 0.9, "resize_mode": "Crop and Resize", "low_vram": False,
                                     "processor_res": 512, "threshold_a": 100, "threshold_b": 200,
                                     "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": "Balanced",
                                     "pixel_perfect": True}]},
            "ADetailer": {"args": [True, False, {"ad_model": "face_yolov8n.pt", "ad_prompt": "detailed face",
                                                 "ad_confidence": 0.3, "ad_denoising_strength": 0.4}]},
        },
        "webhook_url": "https://hooks.example.com/a1111/done", "webhook_events": ["job.completed", "job.error"],
        "priority": 5, "metadata": {"user": "u-1842", "campaign": "coast", "tags": ["lighthouse", "dusk"]},
    }
    img2img = {
        "prompt": "a lighthouse at dusk, oil painting <lora:add_detail:0.5>", "negative_prompt": "lowres",
        "init_images": [image], "denoising_strength": 0.55, "steps": 30, "width": 768, "height": 512,
        "sampler_name": "Euler a", "cfg_scale": 7, "resize_mode": 1, "mask_blur": 4, "inpainting_fill": 1,
        "alwayson_scripts": {"ControlNet": {"args": [{"enabled": True, "image": control_image,
                                                      "module": "depth", "model": "control_v11f1p_sd15_depth"}]}},
    }
    return {
        "bench/core.py submit (5 fields)": ("txt2img", core.SUBMIT.body),
        f"large txt2img ({len(large)} fields)": ("txt2img", json.dumps(large).encode()),
        "img2img, 192 KB + 64 KB images": ("img2img", json.dumps(img2img).encode()),
    }


def measure(root: str, named: dict[str, tuple[str, str]], calls: int) -> dict[str, dict[str, float]]:
    """µs of CPU per call, for each body: the JSON parse, parse_submission, and both (as the route)."""
    sys.path.insert(0, root)
    os.chdir(root)
    from chalicelib import a1111_policy, config, request_models, strict_json  # noqa: PLC0415 - the checkout measured

    settings = config.Settings()
    results = {}
    for name, (kind, text) in named.items():
        raw = text.encode()
        decoded = strict_json.loads(raw)

        def parse(decoded=decoded, kind=kind):  # what service.prepare_job asks of request_models
            request_models.parse_submission(kind, decoded, limits=request_models.Limits.from_settings(settings),
                                            policy=a1111_policy.Policy.from_settings(settings))

        def route(raw=raw, kind=kind):
            request_models.parse_submission(kind, strict_json.loads(raw),
                                            limits=request_models.Limits.from_settings(settings),
                                            policy=a1111_policy.Policy.from_settings(settings))

        results[name] = {}
        for part, call in (("json", lambda raw=raw: strict_json.loads(raw)), ("parse", parse), ("both", route)):
            for _ in range(max(calls // 10, 20)):  # warm up (the models are built at the first submit)
                call()
            began = time.process_time()
            for _ in range(calls):
                call()
            results[name][part] = (time.process_time() - began) / calls * 1e6
    return results


def run_child(root: str, named: dict, calls: int) -> dict:
    answer = subprocess.run([sys.executable, __file__, "--measure", root, "--calls", str(calls)],
                            input=json.dumps(named), capture_output=True, text=True)
    if answer.returncode:
        raise SystemExit(f"measuring {root} failed:\n{answer.stderr}")
    return json.loads(answer.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", help="another checkout whose code is measured beside this one's")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child: measure this checkout, bodies on stdin
    args = parser.parse_args()
    if args.measure:
        json.dump(measure(args.measure, json.load(sys.stdin), args.calls), sys.stdout)
        return
    named = {name: (kind, raw.decode()) for name, (kind, raw) in bodies().items()}
    roots = {"this checkout": str(ROOT), **({"compared": str(pathlib.Path(args.compare).resolve())}
                                           if args.compare else {})}
    rounds: dict[str, list[dict]] = {label: [] for label in roots}
    for _ in range(args.rounds):
        for label, root in roots.items():
            rounds[label].append(run_child(root, named, args.calls))
    print(f"CPU µs per call, best / median of {args.rounds} rounds × {args.calls} calls "
          f"(json: strict_json.loads; parse: parse_submission; both: the two, as a submit runs them)\n")
    columns = [(label, part) for label in reversed(roots) for part in ("json", "parse", "both")]
    print("| body | " + " | ".join(f"{part} ({label})" for label, part in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name in named:
        cells = []
        for label, part in columns:
            values = [result[name][part] for result in rounds[label]]
            cells.append(f"{min(values):.1f} / {statistics.median(values):.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
