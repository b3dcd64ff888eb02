"""One process of the 2-process test: `python distributed_worker.py PROCESS_ID PORT OUT`.

Each process owns 4 CPU devices and feeds its half of the super-batch; the
global mesh spans all 8. Process 0 writes the learner's parameters after two
ACED steps to OUT (.npz).
"""

import os
import sys

process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from step_problem import aced_config, sgd_state, tiny_batch_arrays, tiny_models  # noqa: E402

from aced.train.sharding import replicate  # noqa: E402
from aced.train.state import SuperBatch  # noqa: E402
from aced.train.step import make_train_step  # noqa: E402

mesh = Mesh(np.array(jax.devices()), ("data",))
arrays = tiny_batch_arrays()
half = arrays["images"].shape[0] // 2
local = {k: v[process_id * half : (process_id + 1) * half] for k, v in arrays.items()}
sharding = NamedSharding(mesh, P("data"))
batch = SuperBatch(
    **{k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
)

learner, reference = tiny_models()
config = aced_config()
state = replicate(sgd_state(learner, config), mesh)
reference = replicate(reference, mesh)
step = make_train_step(config, mesh)
for _ in range(2):
    state, metrics = step(state, batch, reference)

leaves = jax.tree.leaves(eqx.filter(state.learner, eqx.is_inexact_array))
gathered = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in leaves]
if process_id == 0:
    np.savez(
        out,
        *gathered,
        loss=np.asarray(multihost_utils.process_allgather(metrics["loss/total"], tiled=True)),
    )
jax.distributed.shutdown()
