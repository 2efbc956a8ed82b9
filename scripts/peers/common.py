"""What the PyTorch peers share: the command line's --threads and --device, and the JSON
they print."""
import json

import torch


def add_machine_options(ap):
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")


def machine(args):
    """The device the arguments name, with PyTorch's thread count set as they ask."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.device(args.device)


def report(result, device):
    """Prints the result as one JSON object, with what it ran on."""
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["torch"] = torch.__version__
    result["threads"] = torch.get_num_threads()
    print(json.dumps(result))
