"""The exception interfaces' generated modules: the clients
(``exc_user``, ``mach_exc_user``: exception_raise... and
mach_exception_raise..., what the kernel side sends to an exception port)
and the servers (``exc_server``, ``mach_exc_server``: the demuxes a
handler serves with mach_msg_server), made by pymach mig from
pymach/defs/exc.defs and mach_exc.defs::

    cd src/pymach/defs
    pymach mig -user ../mig/exc/mach_exc_user.py -server ../mig/exc/mach_exc_server.py mach_exc.defs

Import the module you need (``from pymach.mig.exc import mach_exc_server``):
this package imports none of them."""
