module fluxgate.test/oracle

go 1.19
