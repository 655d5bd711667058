"""Linux system calls. The only package that speaks ctypes and syscalls;
it raises OSError and knows nothing of Mach."""
