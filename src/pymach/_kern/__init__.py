"""The kernel side of pymach: one module per Mach kernel object (task, IPC
space, VM map, VM object), the entry layer that validates arguments
(vm_user), and kern_return_t."""

# what the kernel offers to code outside it, as "module.name" (or a module):
# pymach.lowlevel re-exports exactly these (tests/test_layers.py)
EXPORTS = ("task.SELF", "kern_return.MachError", "kern_return", "message_defs", "vm_defs")
