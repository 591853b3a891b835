from qmtgan.cli import main

main()
