"""The kernel side of pymach: one module per Mach kernel object (task, IPC
space, VM map, VM object), the entry layer that validates arguments
(vm_user), and kern_return_t."""
